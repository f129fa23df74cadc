//! Core benchmark: Veil token protect/unprotect (nonce, AEAD, AAD, token encoding) beside the
//! raw AEAD crates, for 16 B, 64 B and 1 KiB values. Built natively and for wasm32-wasip2 (run
//! there with `veil run`), so the two can be compared. Prints one TSV row per case:
//! `case  algorithm  bytes  ops_per_sec` — the median of `--runs` timed runs (warm-up excluded).
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use veil::crypto::aead::{AeadKey, Algorithm};
use veil::crypto::rng::Csprng;
use veil::crypto::secret::SecretKey;
use veil::crypto::{kdf, token};
use veil::ids::{KeyVersion, SchemeName, TenantId};

struct Opts {
    runs: usize,
    run_time: Duration,
}

fn opts() -> Opts {
    let mut o = Opts { runs: 3, run_time: Duration::from_millis(500) };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => o.runs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(o.runs),
            "--ms" => {
                o.run_time =
                    Duration::from_millis(args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(500))
            }
            "--smoke" => {
                o.runs = 1;
                o.run_time = Duration::from_millis(20);
                i -= 1;
            }
            other => {
                eprintln!("unknown argument {other}; use --runs N --ms MS or --smoke");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

/// Median ops/s of `runs` runs of `f`, each as many batches of 64 calls as fit in `run_time`.
fn measure(o: &Opts, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < o.run_time / 4 {
        f();
    }
    let mut rates = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < o.run_time {
            for _ in 0..64 {
                f();
            }
            n += 64;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
}

fn raw_seal(alg: Algorithm, key: &[u8; 32], nonce: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let payload = Payload { msg: pt, aad };
    let out = match alg {
        Algorithm::Aes256Gcm => aes_gcm::Aes256Gcm::new(key.into()).encrypt(nonce.into(), payload),
        Algorithm::ChaCha20Poly1305 => {
            chacha20poly1305::ChaCha20Poly1305::new(key.into()).encrypt(nonce.into(), payload)
        }
        Algorithm::XChaCha20Poly1305 => {
            chacha20poly1305::XChaCha20Poly1305::new(key.into()).encrypt(nonce.into(), payload)
        }
    };
    out.unwrap_or_default()
}

fn main() {
    let o = opts();
    let tenant = TenantId::parse("bench").unwrap_or_else(|e| panic!("{e}"));
    let scheme = SchemeName::parse("pii").unwrap_or_else(|e| panic!("{e}"));
    let v1 = KeyVersion::FIRST;
    let mut rng = Csprng::from_os().unwrap_or_else(|e| panic!("no randomness: {e}"));
    let dek = SecretKey::generate(&mut rng);
    let target = if cfg!(target_arch = "wasm32") { "wasm" } else { "native" };
    println!("target\tcase\talgorithm\tbytes\tops_per_sec");
    for alg in Algorithm::ALL {
        let key = AeadKey::new(alg, &kdf::scheme_data_key(&dek, &tenant, &scheme, v1));
        let raw_key = *kdf::scheme_data_key(&dek, &tenant, &scheme, v1).expose_secret();
        let nonce = vec![7u8; alg.nonce_len()];
        for size in [16usize, 64, 1024] {
            let value = vec![0x61u8; size];
            let aad = token::aad(&tenant, &scheme, v1, None, None);
            let raw = measure(&o, || {
                black_box(raw_seal(alg, &raw_key, &nonce, &aad, black_box(&value)));
            });
            let protect = measure(&o, || {
                black_box(token::protect(
                    &key,
                    &mut rng,
                    &tenant,
                    &scheme,
                    v1,
                    None,
                    None,
                    black_box(&value),
                ));
            });
            let tok = token::protect(&key, &mut rng, &tenant, &scheme, v1, None, None, &value);
            let unprotect = measure(&o, || {
                let parsed = token::parse(black_box(&tok)).unwrap_or_else(|e| panic!("{e}"));
                black_box(token::unprotect(&key, &tenant, &parsed, None, None).is_ok());
            });
            for (case, rate) in [("raw_seal", raw), ("protect", protect), ("unprotect", unprotect)] {
                println!("{target}\t{case}\t{}\t{size}\t{rate:.0}", alg.as_str());
            }
        }
    }
}
