//! The scheme algorithms: AES-256-GCM (the default), ChaCha20-Poly1305 and
//! XChaCha20-Poly1305, all with 256-bit keys and 128-bit tags. A sealed value is always
//! `nonce ‖ ciphertext ‖ tag`.
//!
//! Which is faster where (DESIGN §13): AES-256-GCM is fastest natively with AES-NI, but in
//! wasm it runs in software and is many times slower (~17× at 64 B); ChaCha20-Poly1305 runs
//! at about the same speed in both. XChaCha20-Poly1305 costs one extra HChaCha20 block and
//! takes a 192-bit nonce, so random nonces never realistically collide.

use std::fmt;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use zeroize::Zeroizing;

use super::rng::Csprng;
use super::secret::SecretKey;
use super::DecryptError;

/// A scheme's AEAD algorithm. The strings are the ones stored in scheme metadata and
/// accepted by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    /// AES-256-GCM (NIST SP 800-38D), 96-bit random nonce.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439), 96-bit random nonce.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03), 192-bit random nonce.
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 3] =
        [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305, Algorithm::XChaCha20Poly1305];
    /// The authentication tag length of every algorithm, in bytes.
    pub const TAG_LEN: usize = 16;
    /// The shortest nonce of any algorithm, in bytes.
    pub const MIN_NONCE_LEN: usize = 12;

    /// Parses `aes-256-gcm`, `chacha20-poly1305` or `xchacha20-poly1305` (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::ChaCha20Poly1305 => "chacha20-poly1305",
            Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }

    /// Nonce length in bytes: 12, 12, 24.
    pub fn nonce_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm | Algorithm::ChaCha20Poly1305 => 12,
            Algorithm::XChaCha20Poly1305 => 24,
        }
    }

    /// How many values one key may seal before Veil rotates it (docs/kms.md, "Key-use limits").
    /// With random 96-bit nonces NIST SP 800-38D §8.3 caps AES-GCM at 2^32 invocations per key
    /// (collision probability about 2^-33 there); ChaCha20-Poly1305 (RFC 8439) has the same
    /// 96-bit nonce and so the same bound. Veil stops at half of it, 2^31 (about 2^-35). With
    /// 192-bit random nonces XChaCha20-Poly1305's collision bound is far away (about 2^-97 at
    /// 2^48 values); Veil still rotates at 2^48, so that no key is used without limit.
    pub fn max_seals(self) -> u64 {
        match self {
            Algorithm::Aes256Gcm | Algorithm::ChaCha20Poly1305 => 1 << 31,
            Algorithm::XChaCha20Poly1305 => 1 << 48,
        }
    }

    /// The length of a sealed value for a plaintext of `plaintext_len` bytes.
    pub fn sealed_len(self, plaintext_len: usize) -> usize {
        self.nonce_len() + plaintext_len + Self::TAG_LEN
    }
}

/// The default scheme algorithm (DESIGN §5).
impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::Aes256Gcm
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A nonce of the wrong length was given to [`AeadKey::seal_with_nonce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceLengthError;

impl fmt::Display for NonceLengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the nonce has the wrong length for the algorithm")
    }
}

impl std::error::Error for NonceLengthError {}

/// The ciphers zeroize their key material on drop (RustCrypto `zeroize` support).
enum Cipher {
    Aes256Gcm(Box<Aes256Gcm>),
    ChaCha20Poly1305(ChaCha20Poly1305),
    XChaCha20Poly1305(XChaCha20Poly1305),
}

/// An initialised cipher: the key schedule is done once and reused for every value of a
/// request.
pub struct AeadKey {
    alg: Algorithm,
    cipher: Cipher,
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeadKey({}, ..)", self.alg)
    }
}

impl AeadKey {
    pub fn new(alg: Algorithm, key: &SecretKey) -> Self {
        let k = GenericArray::from_slice(key.expose_secret());
        let cipher = match alg {
            Algorithm::Aes256Gcm => Cipher::Aes256Gcm(Box::new(Aes256Gcm::new(k))),
            Algorithm::ChaCha20Poly1305 => Cipher::ChaCha20Poly1305(ChaCha20Poly1305::new(k)),
            Algorithm::XChaCha20Poly1305 => Cipher::XChaCha20Poly1305(XChaCha20Poly1305::new(k)),
        };
        Self { alg, cipher }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Encrypts with a fresh random nonce from `rng`; returns `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, rng: &mut Csprng, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.alg.sealed_len(plaintext.len()));
        self.seal_into(rng, aad, plaintext, &mut out);
        out
    }

    /// Like [`AeadKey::seal`], into `out` (cleared first): lets a batch reuse one buffer.
    pub fn seal_into(&self, rng: &mut Csprng, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let n = self.alg.nonce_len();
        out.clear();
        out.reserve(self.alg.sealed_len(plaintext.len()));
        out.resize(n, 0);
        rng.fill(out);
        self.seal_after_nonce(out, aad, plaintext);
    }

    /// Encrypts with a caller-chosen nonce: for known-answer and golden tests only. Reusing
    /// a nonce under one key breaks both confidentiality and integrity.
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, NonceLengthError> {
        if nonce.len() != self.alg.nonce_len() {
            return Err(NonceLengthError);
        }
        let mut out = Vec::with_capacity(self.alg.sealed_len(plaintext.len()));
        out.extend_from_slice(nonce);
        self.seal_after_nonce(&mut out, aad, plaintext);
        Ok(out)
    }

    /// `out` holds exactly the nonce; appends the ciphertext and the tag.
    #[expect(clippy::expect_used, reason = "sealing fails only on inputs of many GiB, beyond any limit")]
    fn seal_after_nonce(&self, out: &mut Vec<u8>, aad: &[u8], plaintext: &[u8]) {
        let n = out.len();
        out.extend_from_slice(plaintext);
        let (nonce, body) = out.split_at_mut(n);
        let nonce = &*nonce;
        let tag = match &self.cipher {
            Cipher::Aes256Gcm(c) => c.encrypt_in_place_detached(GenericArray::from_slice(nonce), aad, body),
            Cipher::ChaCha20Poly1305(c) => {
                c.encrypt_in_place_detached(GenericArray::from_slice(nonce), aad, body)
            }
            Cipher::XChaCha20Poly1305(c) => {
                c.encrypt_in_place_detached(GenericArray::from_slice(nonce), aad, body)
            }
        }
        // The only failure is a plaintext or AAD over 64 GiB (AES-GCM) / 256 GiB
        // (ChaCha20), far beyond any request limit and beyond wasm32's address space.
        .expect("AEAD input within the algorithm's length limit");
        out.extend_from_slice(&tag);
    }

    /// Decrypts `nonce ‖ ciphertext ‖ tag`. Every failure, including a value too short to
    /// hold a nonce and a tag, is the same [`DecryptError`]. The plaintext is wiped on drop.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let n = self.alg.nonce_len();
        if sealed.len() < n + Algorithm::TAG_LEN {
            return Err(DecryptError);
        }
        let (nonce, rest) = sealed.split_at(n);
        let (ct, tag) = rest.split_at(rest.len() - Algorithm::TAG_LEN);
        let tag = GenericArray::from_slice(tag);
        let mut buf = Zeroizing::new(ct.to_vec());
        match &self.cipher {
            Cipher::Aes256Gcm(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf, tag)
            }
            Cipher::ChaCha20Poly1305(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf, tag)
            }
            Cipher::XChaCha20Poly1305(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf, tag)
            }
        }
        .map_err(|_| DecryptError)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testvec;

    /// Runs a known-answer file: `expect: ok` seals to `ct ‖ tag` and opens back;
    /// `expect: fail` must not open.
    fn run_kat(alg: Algorithm, file: &str) -> usize {
        let cases = testvec::parse(file);
        for c in &cases {
            let key = SecretKey::try_from_slice(&c.hex("key")).unwrap_or_else(|| panic!("{}: key", c.name()));
            let aead = AeadKey::new(alg, &key);
            let (iv, aad, ct, tag) = (c.hex("iv"), c.hex("aad"), c.hex("ct"), c.hex("tag"));
            let sealed: Vec<u8> = [&iv[..], &ct, &tag].concat();
            match c.get("expect") {
                "ok" => {
                    let pt = c.hex("pt");
                    assert_eq!(aead.seal_with_nonce(&iv, &aad, &pt), Ok(sealed.clone()), "{}", c.name());
                    let opened = aead.open(&aad, &sealed).map(|p| p.to_vec());
                    assert_eq!(opened, Ok(pt), "{}", c.name());
                }
                "fail" => assert_eq!(aead.open(&aad, &sealed), Err(DecryptError), "{}", c.name()),
                other => panic!("{}: unknown expect {other:?}", c.name()),
            }
        }
        cases.len()
    }

    #[test]
    fn aes_256_gcm_nist_cavp() {
        let f = include_str!("../../tests/vectors/aes-256-gcm-nist-cavp.txt");
        assert_eq!(run_kat(Algorithm::Aes256Gcm, f), 14);
    }

    #[test]
    fn chacha20_poly1305_rfc8439() {
        let f = include_str!("../../tests/vectors/chacha20-poly1305-rfc8439.txt");
        assert_eq!(run_kat(Algorithm::ChaCha20Poly1305, f), 2);
    }

    #[test]
    fn xchacha20_poly1305_draft03() {
        let f = include_str!("../../tests/vectors/xchacha20-poly1305-draft-irtf-cfrg-xchacha-03.txt");
        assert_eq!(run_kat(Algorithm::XChaCha20Poly1305, f), 2);
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_string(&a).ok(), Some(format!("\"{a}\"")));
        }
        for bad in ["", "AES-256-GCM", "aes256gcm", "aes-256-gcm ", "chacha20poly1305"] {
            assert_eq!(Algorithm::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Algorithm::default(), Algorithm::Aes256Gcm);
        assert_eq!(Algorithm::ChaCha20Poly1305.nonce_len(), 12);
        assert_eq!(Algorithm::XChaCha20Poly1305.nonce_len(), 24);
    }

    #[test]
    fn seal_open_round_trip_and_failures() {
        let mut rng = Csprng::from_seed([3; 32]);
        let key = SecretKey::generate(&mut rng);
        let other = SecretKey::generate(&mut rng);
        for alg in Algorithm::ALL {
            let k = AeadKey::new(alg, &key);
            assert_eq!(k.algorithm(), alg);
            for pt in [&b""[..], b"x", &[0x5a; 1000]] {
                let s1 = k.seal(&mut rng, b"ad", pt);
                let s2 = k.seal(&mut rng, b"ad", pt);
                assert_eq!(s1.len(), alg.sealed_len(pt.len()));
                assert_ne!(s1, s2, "fresh nonce per seal");
                assert_eq!(k.open(b"ad", &s1).map(|p| p.to_vec()), Ok(pt.to_vec()));
                assert_eq!(k.open(b"ae", &s1), Err(DecryptError));
                assert_eq!(AeadKey::new(alg, &other).open(b"ad", &s1), Err(DecryptError));
                for i in 0..s1.len() {
                    let mut t = s1.clone();
                    t[i] ^= 0x01;
                    assert_eq!(k.open(b"ad", &t), Err(DecryptError), "{alg} flip at {i}");
                }
                for len in 0..s1.len() {
                    assert_eq!(k.open(b"ad", &s1[..len]), Err(DecryptError));
                }
            }
            assert_eq!(k.seal_with_nonce(&[0; 13], b"", b""), Err(NonceLengthError));
            assert_eq!(format!("{k:?}"), format!("AeadKey({alg}, ..)"));
        }
    }
}
