//! Core benchmark: Veil token protect/unprotect (nonce, AEAD, AAD, token encoding) beside the
//! raw AEAD crates, for 16 B, 64 B and 1 KiB values. Cases: `raw_seal` = the AEAD crate alone
//! (key schedule done once, in place into a reused buffer, fixed nonce); `protect` = one value
//! of a batch (token::Sealer: nonce from the CSPRNG + seal + base64 + token head); `protect_one`
//! = a single-value request's protect (token::protect: AAD and head built for the one value);
//! `unprotect` = token parse + AAD + open. Built natively and for wasm32-wasip2 (run
//! there with `veil run`), so the two can be compared. Prints one TSV row per case:
//! `case  algorithm  bytes  ops_per_sec` — the median of `--runs` timed runs (warm-up excluded).
#![forbid(unsafe_code)]
#![allow(clippy::panic, clippy::exit, reason = "a command-line benchmark: a bad argument or setup stops it")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
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

/// The AEAD crate alone: key schedule done once, sealing in place into a reused buffer.
enum Raw {
    Aes(Box<aes_gcm::Aes256Gcm>),
    ChaCha(chacha20poly1305::ChaCha20Poly1305),
    XChaCha(chacha20poly1305::XChaCha20Poly1305),
}

impl Raw {
    fn new(alg: Algorithm, key: &[u8; 32]) -> Raw {
        match alg {
            Algorithm::Aes256Gcm => Raw::Aes(Box::new(aes_gcm::Aes256Gcm::new(key.into()))),
            Algorithm::ChaCha20Poly1305 => Raw::ChaCha(chacha20poly1305::ChaCha20Poly1305::new(key.into())),
            Algorithm::XChaCha20Poly1305 => {
                Raw::XChaCha(chacha20poly1305::XChaCha20Poly1305::new(key.into()))
            }
        }
    }

    /// Writes `ciphertext ‖ tag` of `pt` into `buf`.
    fn seal(&self, nonce: &[u8], aad: &[u8], pt: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(pt);
        let tag = match self {
            Raw::Aes(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Raw::ChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Raw::XChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        buf.extend_from_slice(&tag.unwrap_or_default());
    }
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
            let raw_cipher = Raw::new(alg, &raw_key);
            let mut buf = Vec::with_capacity(size + 16);
            let raw = measure(&o, || {
                raw_cipher.seal(&nonce, &aad, black_box(&value), &mut buf);
                black_box(&buf);
            });
            let mut sealer = token::Sealer::new(&key, &tenant, &scheme, v1, None, None);
            let protect = measure(&o, || {
                black_box(sealer.protect(&mut rng, black_box(&value)));
            });
            let protect_one = measure(&o, || {
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
            for (case, rate) in [
                ("raw_seal", raw),
                ("protect", protect),
                ("protect_one", protect_one),
                ("unprotect", unprotect),
            ] {
                println!("{target}\t{case}\t{}\t{size}\t{rate:.0}", alg.as_str());
            }
        }
    }
}
