//! Key material as its own type: zeroized on drop, never printed, never cloned by accident.

use std::fmt;

use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::rng::Csprng;

/// A 256-bit symmetric key (a data key, a derived scheme key, a subject secret).
///
/// It has no `Clone`, `Display` or derived `Debug`; the bytes are reachable only through
/// [`SecretKey::expose_secret`], and they are wiped when the value is dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// The length of every Veil key, in bytes.
    pub const LEN: usize = 32;

    /// Takes ownership of 32 key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// Copies a key from a slice; `None` unless it is exactly 32 bytes long.
    pub fn try_from_slice(b: &[u8]) -> Option<Self> {
        let mut k = Self([0u8; 32]);
        if b.len() != Self::LEN {
            return None;
        }
        k.0.copy_from_slice(b);
        Some(k)
    }

    /// A fresh random key drawn from the instance's CSPRNG.
    pub fn generate(rng: &mut Csprng) -> Self {
        let mut k = Self([0u8; 32]);
        rng.fill(&mut k.0);
        k
    }

    /// The raw key bytes. Call sites are the places a reviewer should look at.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Constant-time comparison, for tests and for checks that must not leak timing.
impl ConstantTimeEq for SecretKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes() {
        let k = SecretKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
    }

    #[test]
    fn slice_must_be_32_bytes() {
        assert!(SecretKey::try_from_slice(&[1u8; 31]).is_none());
        assert!(SecretKey::try_from_slice(&[1u8; 33]).is_none());
        assert!(SecretKey::try_from_slice(&[]).is_none());
        let k = SecretKey::try_from_slice(&[7u8; 32]).map(|k| *k.expose_secret());
        assert_eq!(k, Some([7u8; 32]));
    }

    #[test]
    fn generate_differs_and_zeroize_wipes() {
        let mut rng = Csprng::from_seed([1; 32]);
        let a = SecretKey::generate(&mut rng);
        let mut b = SecretKey::generate(&mut rng);
        assert!(!bool::from(a.ct_eq(&b)));
        assert!(bool::from(a.ct_eq(&SecretKey::from_bytes(*a.expose_secret()))));
        b.zeroize();
        assert_eq!(b.expose_secret(), &[0u8; 32]);
    }
}
