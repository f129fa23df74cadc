//! Veil: a serverless encryption gateway, compiled to a WebAssembly component.
//!
//! The data path reads top to bottom: `api` (HTTP) → `auth` (who) → `policy` (may they) →
//! `ops` with `scheme` + `store` (which recipe, which key) → `kms` (unwrap the data key) →
//! `crypto` (the primitive) → response. Only `host` touches the Spin SDK, and only on wasm32.
// `deny`, not `forbid`: the Spin SDK's and wit-bindgen's macros expand to `unsafe` glue in the
// `host` module, the one place allowed to contain it. No hand-written unsafe anywhere.
#![deny(unsafe_code)]
// The component's stdout is nobody's log: diagnostics go to stderr (`eprintln!`), answers to
// the response. (Only here: for the host and the benchmark, stdout is their output.)
#![warn(clippy::print_stdout)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod ids;
pub mod kms;
pub mod kv;
pub mod ops;
pub mod policy;
pub mod scheme;
pub mod store;
pub mod subjects;
pub mod vars;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
#[allow(unsafe_code, reason = "generated bindings only (`#[http_component]`, `wit_bindgen::generate!`)")]
mod host;

/// Every freed heap block is zeroed before the allocator may hand it out again, so that an
/// instance the host keeps for later requests holds no residue of earlier ones (docs/architecture.md,
/// "Instance reuse"); `host` also wipes the used stack when a request returns.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
#[global_allocator]
static ALLOCATOR: veil_scrub_alloc::Scrubbing<std::alloc::System> =
    veil_scrub_alloc::Scrubbing::new(std::alloc::System);
