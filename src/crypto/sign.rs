//! Ed25519 signatures (RFC 8032, pure Ed25519: no context, no pre-hash) for the erasure
//! certificates Veil signs. Verification is strict ([`ed25519_dalek::VerifyingKey::verify_strict`]):
//! a non-canonical `S`, a small-order `R` or a small-order public key is refused, so a
//! certificate has exactly one valid signature per key and message.
//!
//! Doors: [`SigningKey`] (secret: zeroized on drop, never printed, its seed reachable only
//! through [`SigningKey::expose_secret`]) signs; [`VerifyingKey`] (public) verifies.

use std::fmt;

use ed25519_dalek::Signer as _;

use super::rng::Csprng;
use super::secret::SecretKey;

/// Length of a public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature, in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Why a public key or a signature was refused. One variant per input, no more detail: what
/// exactly failed (encoding, small order, the equation) is not the caller's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The 32 bytes are not the encoding of a point, or the point has small order.
    InvalidPublicKey,
    /// The signature is not 64 bytes, is not canonical, or does not verify.
    InvalidSignature,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::InvalidPublicKey => f.write_str("the Ed25519 public key is invalid"),
            SignatureError::InvalidSignature => f.write_str("the Ed25519 signature is invalid"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// An Ed25519 private key, built from a 32-byte seed (RFC 8032 §5.1.5). It has no `Clone`;
/// `ed25519-dalek` wipes the seed and the expanded key when it is dropped.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key whose RFC 8032 seed ("private key") is `seed`.
    pub fn from_seed(seed: &SecretKey) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed.expose_secret()))
    }

    /// A fresh key from the instance's CSPRNG.
    pub fn generate(rng: &mut Csprng) -> Self {
        Self::from_seed(&SecretKey::generate(rng))
    }

    /// The 32-byte seed. Call sites are where a reviewer should look (wrapping it for storage).
    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// The deterministic RFC 8032 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// An Ed25519 public key that is a valid point of large order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses a 32-byte public key; refuses bytes that are not a point and small-order points
    /// (which would verify forged signatures for every message).
    pub fn from_bytes(b: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, SignatureError> {
        let k = ed25519_dalek::VerifyingKey::from_bytes(b).map_err(|_| SignatureError::InvalidPublicKey)?;
        if k.is_weak() {
            return Err(SignatureError::InvalidPublicKey);
        }
        Ok(VerifyingKey(k))
    }

    /// Like [`VerifyingKey::from_bytes`], from a slice that must be exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, SignatureError> {
        let b: &[u8; PUBLIC_KEY_LEN] = b.try_into().map_err(|_| SignatureError::InvalidPublicKey)?;
        Self::from_bytes(b)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Strict verification of `sig` (64 bytes) over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| SignatureError::InvalidSignature)?;
        self.0.verify_strict(msg, &sig).map_err(|_| SignatureError::InvalidSignature)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "VerifyingKey({hex})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testvec::{self, hex};

    fn seed(b: &[u8]) -> SecretKey {
        SecretKey::try_from_slice(b).unwrap_or_else(|| panic!("a 32-byte seed"))
    }

    /// RFC 8032 §7.1 TEST 1, 2, 3, 1024 (the 1023-byte message) and SHA(abc): the public key
    /// from the seed, the exact signature, and that it verifies.
    #[test]
    fn rfc8032_section_7_1() {
        let cases = testvec::parse(include_str!("../../tests/vectors/ed25519-rfc8032.txt"));
        let names: Vec<&str> = cases.iter().map(|c| c.name()).collect();
        let want =
            ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"].map(|t| format!("RFC 8032 7.1 {t}"));
        assert_eq!(names, want);
        for c in &cases {
            let sk = SigningKey::from_seed(&seed(&c.hex("secret_key")));
            let pk = sk.verifying_key();
            assert_eq!(hex(&pk.to_bytes()), c.get("public_key"), "{}", c.name());
            let msg = c.hex("message");
            let len: usize = c.get("message_len").parse().unwrap_or(usize::MAX);
            assert_eq!(msg.len(), len, "{}", c.name());
            let sig = sk.sign(&msg);
            assert_eq!(hex(&sig), c.get("signature"), "{}", c.name());
            let parsed = VerifyingKey::from_slice(&c.hex("public_key")).map(|k| k.to_bytes());
            assert_eq!(parsed, Ok(pk.to_bytes()));
            assert_eq!(pk.verify(&msg, &sig), Ok(()), "{}", c.name());
            let mut other = msg.clone();
            other.push(0);
            assert_eq!(pk.verify(&other, &sig), Err(SignatureError::InvalidSignature), "{}", c.name());
        }
    }

    #[test]
    fn every_bit_of_a_signature_matters_and_lengths_are_checked() {
        let mut rng = Csprng::from_seed([5; 32]);
        let sk = SigningKey::generate(&mut rng);
        let pk = sk.verifying_key();
        let sig = sk.sign(b"erasure certificate");
        assert_eq!(pk.verify(b"erasure certificate", &sig), Ok(()));
        for i in 0..SIGNATURE_LEN * 8 {
            let mut t = sig;
            t[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                pk.verify(b"erasure certificate", &t),
                Err(SignatureError::InvalidSignature),
                "bit {i}"
            );
        }
        for len in [0, 63, 65] {
            let mut v = sig.to_vec();
            v.resize(len, 0);
            assert_eq!(pk.verify(b"erasure certificate", &v), Err(SignatureError::InvalidSignature));
        }
        let other = SigningKey::generate(&mut rng).verifying_key();
        assert_eq!(other.verify(b"erasure certificate", &sig), Err(SignatureError::InvalidSignature));
        for len in [0, 31, 33] {
            assert_eq!(VerifyingKey::from_slice(&vec![1; len]), Err(SignatureError::InvalidPublicKey));
        }
    }

    /// S + L (the same scalar, not reduced) is the classic malleability: strict verification
    /// refuses it, so one message has one valid signature.
    #[test]
    fn a_non_canonical_s_is_refused() {
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let sk = SigningKey::from_seed(&SecretKey::from_bytes([9; 32]));
        let pk = sk.verifying_key();
        // Try messages until S + L still fits in 256 bits (S < 2^256 - L: almost always).
        let mut sig = sk.sign(b"m");
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            sig[32 + i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        assert_eq!(pk.verify(b"m", &sig), Err(SignatureError::InvalidSignature));
    }

    /// A signature whose R is the identity (small order) under a valid key: [S]B = [k]A holds
    /// because the test knows A's scalar. Plain cofactorless verification accepts it; strict
    /// verification, and so Veil, refuses it.
    #[test]
    fn a_small_order_r_is_refused() {
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::Identity;
        use sha2::{Digest, Sha512};

        let x = Scalar::from_bytes_mod_order([3; 32]);
        let a = (ED25519_BASEPOINT_POINT * x).compress().to_bytes();
        let r = EdwardsPoint::identity().compress().to_bytes();
        let msg = b"forged certificate";
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new().chain_update(r).chain_update(a).chain_update(msg).finalize().into(),
        );
        let sig: Vec<u8> = [r, (k * x).to_bytes()].concat();

        let dalek = ed25519_dalek::VerifyingKey::from_bytes(&a).expect("a valid point");
        let dalek_sig = ed25519_dalek::Signature::from_slice(&sig).expect("64 bytes");
        assert!(ed25519_dalek::Verifier::verify(&dalek, msg, &dalek_sig).is_ok(), "the lax check accepts it");
        let pk = VerifyingKey::from_bytes(&a).expect("a large-order key");
        assert_eq!(pk.verify(msg, &sig), Err(SignatureError::InvalidSignature));
    }

    /// Small-order points (the identity, the point of order 2, one of order 4, one of order 8)
    /// are refused as public keys.
    #[test]
    fn small_order_public_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        let order4 = [0u8; 32];
        let order8 = testvec::unhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05");
        for k in [identity.to_vec(), order2.to_vec(), order4.to_vec(), order8] {
            assert_eq!(VerifyingKey::from_slice(&k), Err(SignatureError::InvalidPublicKey), "{}", hex(&k));
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let sk = SigningKey::from_seed(&SecretKey::from_bytes([0xab; 32]));
        assert_eq!(format!("{sk:?}"), "SigningKey(..)");
        assert_eq!(sk.expose_secret(), &[0xab; 32]);
        let pk = sk.verifying_key();
        assert_eq!(format!("{pk:?}"), format!("VerifyingKey({})", hex(&pk.to_bytes())));
        assert_eq!(SignatureError::InvalidSignature.to_string(), "the Ed25519 signature is invalid");
    }
}
