//! The dev-only local KEK: AES-256-GCM under 32 bytes from the `local_kek` variable.
//!
//! Refused unless the deployment is in dev mode. The blob is nonce ‖ ciphertext ‖ tag, with the
//! tenant, scheme and version as AAD; the KEK version is a fingerprint of the KEK (not the key).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{context_bytes, Kek, KeyContext, KmsError, WrappedDek};
use crate::crypto::aead::{AeadKey, Algorithm};
use crate::crypto::rng::Csprng;
use crate::crypto::secret::SecretKey;

pub const KEK_ID: &str = "local";
const AAD_LABEL: &str = "veil/v1/local-kek-wrap";
const FINGERPRINT_LABEL: &[u8] = b"veil/v1/local-kek-fingerprint";

pub struct LocalKek {
    aead: AeadKey,
    fingerprint: String,
    rng: std::cell::RefCell<Csprng>,
}

impl LocalKek {
    /// Builds the local KEK from the base64 `local_kek` variable; only in dev mode.
    pub fn from_config(dev_mode: bool, kek_b64: Option<&str>, rng: Csprng) -> Result<Self, KmsError> {
        if !dev_mode {
            return Err(KmsError::DevModeRequired);
        }
        let b64 = kek_b64.ok_or_else(|| {
            KmsError::Misconfigured("the variable local_kek is not set (base64 of 32 bytes)".into())
        })?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| KmsError::Misconfigured("local_kek is not base64".into()))?,
        );
        let key = SecretKey::try_from_slice(&raw)
            .ok_or_else(|| KmsError::Misconfigured("local_kek must decode to exactly 32 bytes".into()))?;
        Ok(Self::new(&key, rng))
    }

    pub fn new(key: &SecretKey, rng: Csprng) -> Self {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_LABEL);
        h.update(key.expose_secret());
        let digest = h.finalize();
        let fingerprint = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        LocalKek {
            aead: AeadKey::new(Algorithm::Aes256Gcm, key),
            fingerprint,
            rng: std::cell::RefCell::new(rng),
        }
    }
}

impl Kek for LocalKek {
    fn wrap(&self, dek: &SecretKey, ctx: KeyContext<'_>) -> Result<WrappedDek, KmsError> {
        let aad = context_bytes(AAD_LABEL, ctx);
        let blob = self.aead.seal(&mut self.rng.borrow_mut(), &aad, dek.expose_secret());
        Ok(WrappedDek { blob, kek_id: KEK_ID.into(), kek_version: self.fingerprint.clone() })
    }

    fn unwrap(&self, wrapped: &WrappedDek, ctx: KeyContext<'_>) -> Result<SecretKey, KmsError> {
        if wrapped.kek_id != KEK_ID {
            return Err(KmsError::KeyNotFound(format!("kek id {}", wrapped.kek_id)));
        }
        if wrapped.kek_version != self.fingerprint {
            return Err(KmsError::KeyNotFound(
                "the data key was wrapped by another local KEK (local_kek changed)".into(),
            ));
        }
        let aad = context_bytes(AAD_LABEL, ctx);
        let plain = self.aead.open(&aad, &wrapped.blob).map_err(|_| KmsError::UnwrapFailed)?;
        SecretKey::try_from_slice(&plain).ok_or(KmsError::UnwrapFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyVersion, SchemeName, TenantId};

    fn kek() -> LocalKek {
        LocalKek::new(&SecretKey::from_bytes([7; 32]), Csprng::from_seed([1; 32]))
    }

    #[test]
    fn wraps_and_unwraps_bound_to_context() {
        let t = TenantId::parse("t").expect("t");
        let s = SchemeName::parse("pii").expect("s");
        let v1 = KeyVersion::FIRST;
        let ctx = KeyContext { tenant: &t, scheme: &s, version: v1 };
        let dek = SecretKey::from_bytes([9; 32]);
        let w = kek().wrap(&dek, ctx).expect("wrap");
        assert_eq!(w.blob.len(), 12 + 32 + 16);
        assert!(!w.blob.windows(32).any(|win| win == [9u8; 32]));
        let back = kek().unwrap(&w, ctx).expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret());
        let other = SchemeName::parse("other").expect("s");
        let bad = KeyContext { tenant: &t, scheme: &other, version: v1 };
        assert_eq!(kek().unwrap(&w, bad).err(), Some(KmsError::UnwrapFailed));
        let v2 = KeyContext { tenant: &t, scheme: &s, version: KeyVersion::new(2).expect("v") };
        assert_eq!(kek().unwrap(&w, v2).err(), Some(KmsError::UnwrapFailed));
        let other_kek = LocalKek::new(&SecretKey::from_bytes([8; 32]), Csprng::from_seed([1; 32]));
        assert!(matches!(other_kek.unwrap(&w, ctx), Err(KmsError::KeyNotFound(_))));
    }

    #[test]
    fn refused_outside_dev_mode_and_checks_the_key() {
        let seed = || Csprng::from_seed([0; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(matches!(LocalKek::from_config(false, Some(&b64), seed()), Err(KmsError::DevModeRequired)));
        assert!(LocalKek::from_config(true, Some(&b64), seed()).is_ok());
        assert!(matches!(LocalKek::from_config(true, None, seed()), Err(KmsError::Misconfigured(_))));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert!(matches!(LocalKek::from_config(true, Some(&short), seed()), Err(KmsError::Misconfigured(_))));
    }
}
