//! The exported `veil:gateway/protection` interface: the same operations and policy as HTTP;
//! and `veil:gateway/http`, the lean HTTP door for Veil's own host (`http_entry`).

use super::{with_request, SpinVariables};
use crate::config::Config;
use crate::ops::{self, ItemError, OpError};

/// The generated bindings, in their own module so that what their glue needs stays there.
#[allow(clippy::mem_forget, reason = "wit-bindgen's glue hands buffers to the host with mem::forget")]
mod bindings {
    wit_bindgen::generate!({
        world: "veil",
        path: "wit/veil.wit",
    });
}

use bindings::exports::veil::gateway::http::{Request as HttpRequest, Response as HttpResponse};
use bindings::exports::veil::gateway::protection::{Error, Guest};

struct Veil;

/// An operation's failure as the WIT `error` record: the same code and message as over HTTP,
/// and no status (that is the HTTP API's business).
impl From<OpError> for Error {
    fn from(e: OpError) -> Self {
        Error { code: e.code().into(), message: e.to_string() }
    }
}

fn item(e: ItemError) -> Error {
    Error { code: e.code.into(), message: e.message.into() }
}

/// Loads the configuration, authenticates the credential and runs `f` as that principal, audited
/// as the HTTP door audits `operation` (docs/audit.md).
fn run<T>(
    credential: &str,
    operation: &str,
    f: impl FnOnce(&mut ops::Ctx<'_>, &crate::auth::Principal) -> Result<T, OpError>,
) -> Result<T, Error> {
    let mut config = Config::load_deferred(std::rc::Rc::new(SpinVariables)).map_err(OpError::from)?;
    let auth_config = std::mem::take(&mut config.auth);
    let result = with_request(&config, auth_config, |ctx, auth, outbound| {
        let who = ops::authenticate(ctx, auth, Some(credential), None, outbound)?;
        let key = ops::audit::begin(ctx, &who)?;
        let result = f(ctx, &who);
        let (status, code) = match &result {
            Ok(_) => (200, None),
            Err(e) => (crate::api::error::ApiError::from(e.clone()).status, Some(e.code())),
        };
        match ops::audit::record(ctx, &who, &key, operation, ops::audit::Kind::Data, status, code) {
            Err(e) if result.is_ok() => Err(e),
            _ => result,
        }
    });
    // The operation's frames are popped: wipe what they left on the stack.
    veil_scrub_alloc::scrub_stack();
    Ok(result??)
}

impl Guest for Veil {
    fn protect(
        credential: String,
        scheme: String,
        values: Vec<Vec<u8>>,
        subject: Option<String>,
        context: Option<String>,
    ) -> Result<Vec<Result<String, Error>>, Error> {
        run(&credential, "protect", |ctx, who| {
            let values: Vec<Result<Vec<u8>, ItemError>> = values.into_iter().map(Ok).collect();
            let (_, results) =
                ops::protect(ctx, who, &scheme, &values, subject.as_deref(), context.as_deref())?;
            Ok(results.into_iter().map(|r| r.map_err(item)).collect())
        })
    }

    fn unprotect(
        credential: String,
        tokens: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    ) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        run(&credential, "unprotect", |ctx, who| {
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let results = ops::unprotect(ctx, who, &tokens, subject.as_deref(), context.as_deref())?;
            Ok(results.into_iter().map(|r| r.map(|pt| pt.to_vec()).map_err(item)).collect())
        })
    }

    fn rewrap(
        credential: String,
        tokens: Vec<String>,
        subject: Option<String>,
        context: Option<String>,
    ) -> Result<Vec<Result<String, Error>>, Error> {
        run(&credential, "rewrap", |ctx, who| {
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let results = ops::rewrap(ctx, who, &tokens, subject.as_deref(), context.as_deref())?;
            Ok(results.into_iter().map(|r| r.map_err(item)).collect())
        })
    }

    fn mask(
        credential: String,
        scheme: String,
        values: Vec<String>,
    ) -> Result<Vec<Result<Option<String>, Error>>, Error> {
        run(&credential, "mask", |ctx, who| {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let results = ops::mask(ctx, who, &scheme, &values)?;
            Ok(results.into_iter().map(|r| r.map_err(item)).collect())
        })
    }
}

impl bindings::exports::veil::gateway::http::Guest for Veil {
    fn handle(request: HttpRequest) -> HttpResponse {
        let HttpRequest { method, path, query, headers, body } = request;
        let answer = super::http_entry::handle_lean(method, path, query, headers, &body);
        drop(body);
        let (status, headers, body) = answer.into_parts();
        // The request's frames are popped: wipe what they left on the stack.
        veil_scrub_alloc::scrub_stack();
        HttpResponse { status, headers, body }
    }
}

bindings::export!(Veil with_types_in bindings);
