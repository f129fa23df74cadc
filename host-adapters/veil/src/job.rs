//! `veil job run <id> --parallel N`: drives a re-encryption job's steps until it is finished
//! (docs/rotation.md "Converting a table").
//!
//! The steps run in process, through the same engine, pre-instance and host services as
//! `veil serve` and `veil lambda` (a fresh instance per step): no server needs to be running or
//! reachable, and the command holds only what a step holds (the manifest's variables, a bearer
//! token). N loops run at once; each sends `POST /v1/jobs/<id>/step` until the job is finished.
//! Progress (rows, rate, ETA) is a live bar on a terminal (stderr) and one plain line every few
//! seconds otherwise. Ctrl-C (or SIGTERM) stops cleanly between steps: a step in flight finishes
//! or rolls back, never half-applies; running the command again continues the job.

use std::io::{IsTerminal as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::cli::JobRunArgs;
use crate::config_bail;
use crate::serve::{self, Mode, Server, ShutdownSignals};

/// How many times in a row a loop retries a step that found a dependency unavailable (503).
const UNAVAILABLE_ATTEMPTS: u32 = 8;

/// Why the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Finished,
    Cancelled,
    Interrupted,
    Failed(String),
}

struct Shared {
    stop: AtomicBool,
    done: AtomicI64,
    failed: AtomicI64,
    remaining: AtomicI64,
    end: std::sync::Mutex<Option<End>>,
}

impl Shared {
    fn end(&self, e: End) {
        let mut g = self.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A failure is never overwritten; an interrupt does not hide how a loop already ended.
        let keep = matches!(*g, Some(End::Failed(_))) || (g.is_some() && e == End::Interrupted);
        if !keep {
            *g = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn call(server: &Arc<Server>, method: Method, path: &str, token: &str) -> Result<(StatusCode, Value)> {
    let body = if method == Method::POST { Bytes::from_static(b"{}") } else { Bytes::new() };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .context("building the request")?;
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let response = server.respond(req, peer, None).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|e| anyhow::anyhow!("reading the answer: {e:?}"))?.to_bytes();
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((parts.status, doc))
}

fn error_text(status: StatusCode, doc: &Value) -> String {
    let code = doc.pointer("/error/code").and_then(Value::as_str).unwrap_or("?");
    let message = doc.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
    format!("{} {code}: {message}", status.as_u16())
}

/// One loop: steps until the job is finished, cancelled, the run is stopped, or a step fails.
async fn step_loop(server: Arc<Server>, shared: Arc<Shared>, path: String, token: Arc<String>) {
    let mut unavailable = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let (status, doc) = match call(&server, Method::POST, &path, &token).await {
            Ok(x) => x,
            Err(e) => return shared.end(End::Failed(format!("{e:#}"))),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE && unavailable < UNAVAILABLE_ATTEMPTS {
            unavailable += 1;
            tokio::time::sleep(Duration::from_millis(100 << unavailable.min(5))).await;
            continue;
        }
        unavailable = 0;
        if status == StatusCode::CONFLICT
            && doc.pointer("/error/code").and_then(Value::as_str) == Some("job_cancelled")
        {
            return shared.end(End::Cancelled);
        }
        if status != StatusCode::OK {
            return shared.end(End::Failed(error_text(status, &doc)));
        }
        let n = |k: &str| doc.get(k).and_then(Value::as_i64).unwrap_or(0);
        shared.done.fetch_add(n("done"), Ordering::SeqCst);
        shared.failed.fetch_add(n("failed"), Ordering::SeqCst);
        shared.remaining.store(n("remaining"), Ordering::SeqCst);
        match doc.get("state").and_then(Value::as_str) {
            Some("finished") => return shared.end(End::Finished),
            Some("running") if n("done") + n("failed") == 0 => {
                // The rest is claimed by other steps: wait for them to commit or give it back.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {}
        }
    }
}

fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.0}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn eta(remaining: i64, rate: f64) -> String {
    if rate <= 0.0 {
        return "?".into();
    }
    let s = (remaining as f64 / rate).ceil() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The progress line: on a terminal a bar redrawn in place, otherwise a plain line.
fn progress(shared: &Shared, start: &Instant, base: i64, total: i64, tty: bool, id: &str) {
    let done = shared.done.load(Ordering::SeqCst);
    let failed = shared.failed.load(Ordering::SeqCst);
    let now_rows = base + done + failed;
    let remaining = (total - now_rows).max(0);
    let rate = (done + failed) as f64 / start.elapsed().as_secs_f64().max(0.001);
    let mut err = std::io::stderr().lock();
    if tty {
        let width = 30usize;
        let frac = if total > 0 { (now_rows as f64 / total as f64).clamp(0.0, 1.0) } else { 1.0 };
        let filled = (frac * width as f64).round() as usize;
        let _ = write!(
            err,
            "\r[{}{}] {now_rows}/{total} rows ({failed} failed)  {} rows/s  ETA {}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            human(rate),
            eta(remaining, rate)
        );
    } else {
        let _ = writeln!(
            err,
            "veil: job {id}: {now_rows}/{total} rows ({failed} failed), {} rows/s, ETA {}",
            human(rate),
            eta(remaining, rate)
        );
    }
    let _ = err.flush();
}

pub fn run(args: JobRunArgs) -> Result<()> {
    let crate::cli::JobCommand::Run(args) = args.command;
    if !valid_job_id(&args.id) {
        config_bail!("`{}` is not a job id (letters, digits, `-`, `_`)", "<id>");
    }
    // only from the environment, never the command line (where other users can read it), as for
    // `veil rekey`
    let token = match std::env::var("VEIL_TOKEN").ok() {
        Some(t) if !t.trim().is_empty() => Arc::new(t.trim().to_string()),
        _ => config_bail!("set VEIL_TOKEN to a bearer token with the tenant role admin"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let prepared = serve::prepare(&args.serve, Mode::Serve)?;
    let id = args.id.clone();
    let parallel = args.parallel;
    let serve_args = args.serve;
    let end = runtime.block_on(async move {
        let mut signals = ShutdownSignals::register()?;
        let server = prepared.server(&serve_args, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let job_path = format!("/v1/jobs/{id}");
        let (status, doc) = call(&server, Method::GET, &job_path, &token).await?;
        if status != StatusCode::OK {
            anyhow::bail!("job {id}: {}", error_text(status, &doc));
        }
        let total = doc.get("total").and_then(Value::as_i64).unwrap_or(0);
        let base = doc.get("done").and_then(Value::as_i64).unwrap_or(0)
            + doc.get("failed").and_then(Value::as_i64).unwrap_or(0);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            done: AtomicI64::new(0),
            failed: AtomicI64::new(0),
            remaining: AtomicI64::new((total - base).max(0)),
            end: std::sync::Mutex::new(None),
        });
        let tty = std::io::stderr().is_terminal();
        let start = Instant::now();
        let step_path = format!("/v1/jobs/{id}/step");
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..parallel {
            loops.spawn(step_loop(server.clone(), shared.clone(), step_path.clone(), token.clone()));
        }
        let tick = Duration::from_millis(if tty { 250 } else { 5000 });
        let mut ticker = tokio::time::interval(tick);
        ticker.tick().await;
        loop {
            tokio::select! {
                joined = loops.join_next() => {
                    if joined.is_none() {
                        break;
                    }
                }
                _ = ticker.tick() => progress(&shared, &start, base, total, tty, &id),
                _ = signals.recv() => {
                    eprintln!("\nveil: stopping after the steps in flight (run again to continue)");
                    shared.end(End::Interrupted);
                }
            }
        }
        progress(&shared, &start, base, total, tty, &id);
        if tty {
            eprintln!();
        }
        let end = shared.end.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        // The job as it now is, on stdout (JSON), for scripts.
        let (status, doc) = call(&server, Method::GET, &job_path, &token).await?;
        if status == StatusCode::OK {
            println!("{doc}");
        }
        anyhow::Ok(end.unwrap_or(End::Interrupted))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match end? {
        End::Finished => {
            eprintln!("veil: job {}: finished", args.id);
            Ok(())
        }
        End::Cancelled => anyhow::bail!("job {} was cancelled", args.id),
        End::Interrupted => {
            anyhow::bail!("interrupted; job {} is not finished (run again to continue)", args.id)
        }
        End::Failed(why) => anyhow::bail!("job {}: a step failed: {why}", args.id),
    }
}
