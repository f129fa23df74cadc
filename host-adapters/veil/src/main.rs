//! `veil`: the native host that serves the Veil WebAssembly component, as Spin would.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "a test should fail loudly on an unexpected error"))]

mod cli;
mod config_error;
mod engine;
mod imports;
mod job;
mod lambda;
mod lean;
mod manifest;
mod outbound;
mod rekey;
mod reuse;
mod run;
mod serve;
mod spin;
mod token;
mod variables;
mod verify_erasure;
mod wit_call;

use std::process::ExitCode;

use clap::Parser;

pub use config_error::ConfigError;

/// Invoked as `bootstrap` (the AWS Lambda custom runtime's entry point): `veil lambda` with the
/// same arguments.
fn parse_args() -> cli::Cli {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| std::path::Path::new(a).file_name().map(|n| n.to_os_string()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("bootstrap")) {
        args.insert(1, "lambda".into());
    }
    cli::Cli::parse_from(args)
}

fn main() -> ExitCode {
    let cli = parse_args();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::AzureFunctions(args) => serve::run_http(args, serve::Mode::AzureFunctions),
        cli::Command::Lambda(args) => lambda::run(args),
        cli::Command::Token(args) => token::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::VerifyErasure(args) => verify_erasure::run(args),
        cli::Command::Imports(args) => imports::run(args),
        cli::Command::Rekey(args) => rekey::run(args),
        cli::Command::WitCall(args) => wit_call::run(args),
        cli::Command::Job(args) => job::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("veil: error: {err:#}");
            if err.chain().any(|e| e.is::<ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
