//! What the warehouse integrations share ([`super::snowflake`], [`super::bigquery`]): one value
//! per row, a SQL `NULL` passes through as `null`, and each row's failure is its own (a `null`
//! result) unless the caller asked for the whole batch to fail ([`OnError::Fail`]).

use serde_json::Value;

use super::error::ApiError;
use crate::auth::Principal;
use crate::ops::{self, Ctx, ItemError, OpError};

/// The operation a warehouse function runs on its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowOp {
    Protect,
    Unprotect,
    Rewrap,
    Mask,
}

impl RowOp {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "protect" => RowOp::Protect,
            "unprotect" => RowOp::Unprotect,
            "rewrap" => RowOp::Rewrap,
            "mask" => RowOp::Mask,
            _ => return None,
        })
    }
}

/// What a failed row does to its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum OnError {
    /// The row's result is `null`; the other rows go on (the default).
    #[default]
    Null,
    /// The whole batch is refused: 422 `row_failed`, naming the first failed row's position and code.
    Fail,
}

impl OnError {
    /// `None` (not given) is the default; anything but `null` or `fail` is refused.
    pub(super) fn parse(s: Option<&str>, from: &str) -> Result<Self, ApiError> {
        match s {
            None | Some("null") => Ok(OnError::Null),
            Some("fail") => Ok(OnError::Fail),
            Some(_) => Err(ApiError::new(400, "invalid_request", format!("{from} is `null` or `fail`"))),
        }
    }
}

/// Runs `op` with `scheme` on every row's value. Whole-request failures (no such scheme, a role
/// that does not allow it, too many rows) are errors; a row's own failure is its `Err`.
pub(super) fn run(
    ctx: &mut Ctx<'_>,
    who: &Principal,
    op: RowOp,
    scheme: &str,
    rows: &[Option<String>],
) -> Result<Vec<Result<Value, ItemError>>, OpError> {
    let present: Vec<&str> = rows.iter().flatten().map(String::as_str).collect();
    let mut done: std::vec::IntoIter<Result<Value, ItemError>> = match op {
        RowOp::Protect => {
            let values: Vec<Result<Vec<u8>, ItemError>> =
                present.iter().map(|v| Ok(v.as_bytes().to_vec())).collect();
            let (_, results) = ops::protect(ctx, who, scheme, &values, None, None)?;
            results.into_iter().map(|r| r.map(Value::String)).collect::<Vec<_>>()
        }
        RowOp::Unprotect => ops::unprotect_in(ctx, who, Some(scheme), &present, None, None)?
            .into_iter()
            .map(|r| {
                r.and_then(|pt| {
                    std::str::from_utf8(&pt)
                        .map(|s| Value::String(s.to_owned()))
                        .map_err(|_| ItemError::NOT_UTF8)
                })
            })
            .collect(),
        RowOp::Rewrap => ops::rewrap_in(ctx, who, Some(scheme), &present, None, None)?
            .into_iter()
            .map(|r| r.map(Value::String))
            .collect(),
        RowOp::Mask => ops::mask(ctx, who, scheme, &present)?
            .into_iter()
            .map(|r| r.map(|m| m.map_or(Value::Null, Value::String)))
            .collect(),
    }
    .into_iter();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(match row {
            None => Ok(Value::Null),
            Some(_) => done.next().ok_or(OpError::Internal)?,
        });
    }
    Ok(out)
}

/// The rows' results as JSON values under `on_error`: a failed row is `null`, or fails the batch.
pub(super) fn finish(
    results: Vec<Result<Value, ItemError>>,
    on_error: OnError,
) -> Result<Vec<Value>, ApiError> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match (r, on_error) {
            (Ok(v), _) => Ok(v),
            (Err(_), OnError::Null) => Ok(Value::Null),
            (Err(e), OnError::Fail) => Err(ApiError::new(
                422,
                "row_failed",
                format!("row {i} of the batch (counting from 0) failed with {}: {}", e.code, e.message),
            )),
        })
        .collect()
}
