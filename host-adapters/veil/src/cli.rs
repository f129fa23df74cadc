//! Command-line interface: `veil serve`, `veil azure-functions`, `veil lambda`, `veil token`, `veil imports`, `veil run`, `veil verify-erasure`, `veil rekey` and `veil job run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The Veil host: serves the Veil WebAssembly component from a Spin manifest.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the manifest's HTTP-triggered component over HTTP/1.1.
    Serve(ServeArgs),
    /// Serve as an Azure Functions custom handler: on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`
    /// (not `--listen`), `/api/v1/...` and `/v1/...` alike, settings also from app settings.
    AzureFunctions(ServeArgs),
    /// Run as an AWS Lambda custom runtime against `$AWS_LAMBDA_RUNTIME_API` (also what the
    /// binary does when invoked as `bootstrap`); `--manifest` is relative to `$LAMBDA_TASK_ROOT`.
    Lambda(ServeArgs),
    /// Print a dev-mode HS256 JWT signed with the `jwt_hs256_secret` variable.
    Token(TokenArgs),
    /// List a component's top-level imports, one per line (what a host must provide to run it).
    Imports(ImportsArgs),
    /// Run a WASI command component (e.g. the in-wasm benchmark) with stdio and arguments only.
    Run(RunArgs),
    /// Check an erasure certificate's Ed25519 signature offline (docs/erasure.md).
    VerifyErasure(VerifyErasureArgs),
    /// KEK rotation for a tenant's schemes (all, or `--scheme`), in process with the manifest's
    /// settings, as the credential in `$VEIL_TOKEN` (docs/rotation.md, "KEK rotation").
    Rekey(RekeyArgs),
    /// Calls the exported `veil:gateway/protection` interface in process (tests; JSON on stdin).
    #[command(hide = true)]
    WitCall(WitCallArgs),
    /// Re-encryption jobs (docs/rotation.md § Converting a table).
    Job(JobRunArgs),
}

#[derive(Debug, Args)]
pub struct WitCallArgs {
    /// The Spin manifest.
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// The state directory [default: `.veil` beside the manifest].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The tenant whose schemes are rekeyed; a JWT in `$VEIL_TOKEN` must be one of this tenant.
    #[arg(long)]
    pub tenant: String,
    /// Only this scheme [default: every scheme of the tenant].
    #[arg(long)]
    pub scheme: Option<String>,
    /// The new KEK as JSON, e.g. `{"provider":"aws-kms","key_id":"..."}` [default: each
    /// scheme's own KEK, its newest key version].
    #[arg(long)]
    pub kek: Option<String>,
    /// The Spin manifest of the deployment (its variables come from the environment as for `veil serve`).
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// The deployment's state directory (SQLite databases) [default: `.veil` beside the manifest].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Deadline of each scheme's rekey (one request to the component).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// Log the host's start-up and each request to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct JobRunArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a job's steps in process (the manifest's component) until it is finished; Ctrl-C
    /// stops between steps.
    Run(JobRun),
}

#[derive(Debug, Args)]
pub struct JobRun {
    /// The job's id (from `POST /v1/jobs`).
    pub id: String,
    /// How many steps run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args)]
pub struct VerifyErasureArgs {
    /// The certificate, as returned by an erase or by `GET /v1/erasures/{id}` (JSON file).
    pub certificate: PathBuf,
    /// The verification keys: a JWKS file, or the URL of `/.well-known/veil/erasure-keys`
    /// [default: that URL under the certificate's `issuer`, if the issuer is a URL].
    #[arg(long)]
    pub keys: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportsArgs {
    /// The component (`.wasm`).
    pub component: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The command component (`.wasm`).
    pub component: PathBuf,
    /// Arguments passed to it.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Requests one instance serves by default before it is retired (`--reuse-instances`).
pub const DEFAULT_REUSE_INSTANCES: u32 = 1000;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Spin manifest (spin_manifest_version = 2).
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// Directory for SQLite databases and the compilation cache [default: `.veil` beside the manifest].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Per-request deadline; a request still running after it gets a 500 `timeout`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// Maximum number of concurrently running component instances (sizes the pooling allocator).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_instances: u32,
    /// How long a request whose body has arrived may wait for a free instance before it gets a
    /// 503 `overloaded` with `Retry-After`, in ms (0: answer at once when none is free).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub queue_timeout_ms: u64,
    /// How long a client may take to send a request's headers, and then its whole body, in ms
    /// (408 `request_timeout` after the body's); also how long a kept-alive connection may idle.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub body_read_timeout_ms: u64,
    /// Most client connections open at once; beyond it, new connections wait in the listen backlog.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Maximum linear memory per instance, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_memory_mib: u32,
    /// PostgreSQL connections per connection string, shared by all instances (`spin:postgres`).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pg_pool_size: u32,
    /// PostgreSQL `statement_timeout` of every connection, in ms (`lock_timeout` is half of it).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub pg_statement_timeout_ms: u64,
    /// How long a SQLite statement waits for another connection's lock before it fails, in ms.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub sqlite_busy_timeout_ms: u64,
    /// Most entries in each key-value store; beyond it the least recently used are evicted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub kv_max_entries: u32,
    /// Most data (keys and values) in each key-value store, in MiB; beyond it the least recently
    /// used entries are evicted.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub kv_max_mib: u32,
    /// Keep the key-value stores in this SQLite file (created if missing; Spin's layout, table
    /// `spin_key_value`) instead of in memory: the caches then outlive a restart and may be
    /// shared by several hosts.
    #[arg(long, value_name = "PATH")]
    pub kv_file: Option<std::path::PathBuf>,
    /// Serve up to N requests with one component instance before retiring it. An instance is
    /// kept only for later requests with exactly the same credential (no credential: a pool of
    /// its own), and the component wipes freed memory and its used stack after each request; read
    /// "Instance reuse" in docs/architecture.md. 1 = a fresh instance per request.
    #[arg(long, default_value_t = DEFAULT_REUSE_INSTANCES, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub reuse_instances: u32,
    /// A fresh instance for every request (the same as `--reuse-instances 1`).
    #[arg(long, conflicts_with = "reuse_instances")]
    pub fresh_instances: bool,
    /// How long a kept instance may wait for its credential's next request before it is retired,
    /// in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reuse_idle_secs: u64,
    /// The most instances kept idle at once, over all credentials (each holds a pool slot and its
    /// memory, at most 16 MiB); beyond it the least recently used is retired.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reuse_max_idle: u32,
    /// Which export of the component answers HTTP requests: `lean` (`veil:gateway/http`, plain
    /// bytes in and out; a component without it is served through `wasi-http`) or `wasi-http`
    /// (`wasi:http/incoming-handler`, as Spin calls it). Both give the same answers.
    #[arg(long, env = "VEIL_ENTRY", value_enum, default_value = "lean")]
    pub entry: crate::lean::Entry,
    /// Add `veil-debug-variable-reads: N`, `veil-debug-memory-grows: N`,
    /// `veil-debug-sql-statements: N` and `veil-debug-instance` to every answer: how many variable
    /// reads (host calls), memory growths and SQL statements the component made for that request,
    /// and a serial number of the instance that served it (tests and
    /// benchmarks; also `VEIL_DEBUG_HOST_CALLS=1`).
    #[arg(long, hide = true)]
    pub debug_host_calls: bool,
    /// After each request, count the occurrences of these bytes (hex) in the instance's linear
    /// memory and say so in `veil-debug-memory-matches` (tests of the heap scrub; compiles the
    /// component with guest debugging, which is slower; also `VEIL_DEBUG_SCAN_MEMORY`).
    #[arg(long, hide = true, env = "VEIL_DEBUG_SCAN_MEMORY", value_name = "HEX")]
    pub debug_scan_memory: Option<String>,
    /// Do not cache compiled code under `<state-dir>/cache`.
    #[arg(long)]
    pub no_cache: bool,
    /// Log one line per request to stderr (also `VEIL_LOG=debug`).
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The tenant claim.
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated roles.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// Lifetime: `30s`, `15m`, `1h`, `2d`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// The `sub` claim.
    #[arg(long, default_value = "dev")]
    pub subject: String,
    /// The Spin manifest whose variables hold the secret and claim names.
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
}
