//! `veil`: the native host that serves the Veil WebAssembly component, as Spin would.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, reason = "a test should fail loudly on an unexpected error"))]

mod cli;
mod engine;
mod manifest;
mod outbound;
mod run;
mod serve;
mod spin;
mod token;
mod variables;
mod verify_erasure;

use std::process::ExitCode;

use clap::Parser;

/// A start-up failure caused by the user's input (flags, manifest, variables): exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Returns early with a [`ConfigError`] (exit code 2).
#[macro_export]
macro_rules! config_bail {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::ConfigError(format!($($arg)*))))
    };
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Token(args) => token::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::VerifyErasure(args) => verify_erasure::run(args),
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
