//! Entry points for the fuzz targets (`fuzz/`, docs/testing.md "Fuzzing"): the body parsing of
//! every route that takes a JSON body, exactly as its handler runs it (the same functions), and
//! nothing after it (no authentication, store or key). Compiled only with the `fuzzing` feature,
//! which nothing but `fuzz/` turns on; it is not part of Veil's interface.

use super::data::{self, UnprotectBody};
use super::error::ApiError;
use super::{parse, schemes};
use crate::ops::NewScheme;

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
}

impl BodyRoute {
    /// Every route with a JSON body (`POST /v1/schemes/{name}/rotate` reads none).
    pub const ALL: [BodyRoute; 4] =
        [BodyRoute::CreateScheme, BodyRoute::Protect, BodyRoute::Unprotect, BodyRoute::Mask];

    /// The method and path, as in docs/api.md.
    pub fn name(self) -> &'static str {
        match self {
            BodyRoute::CreateScheme => "POST /v1/schemes",
            BodyRoute::Protect => "POST /v1/protect",
            BodyRoute::Unprotect => "POST /v1/unprotect",
            BodyRoute::Mask => "POST /v1/mask",
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
        values: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
        base64: bool,
    },
    Mask {
        scheme: String,
        values: Vec<String>,
    },
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
            Parsed::Unprotect { values: b.values, subject: b.subject, context: b.context, base64 }
        }
        BodyRoute::Mask => {
            let b: data::MaskBody = parse(body)?;
            Parsed::Mask { scheme: b.scheme, values: b.values }
        }
    })
}
