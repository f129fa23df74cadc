//! `veil`: the native host that serves the Veil WebAssembly component, as Spin would.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "a test should fail loudly on an unexpected error"))]

mod cli;
mod config_error;
mod engine;
mod manifest;
mod outbound;
mod run;
mod serve;
mod spin;
mod token;
mod variables;

use std::process::ExitCode;

use clap::Parser;

pub use config_error::ConfigError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Token(args) => token::run(args),
        cli::Command::Run(args) => run::run(args),
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
