//! The token parser (`crypto::token::parse`): never panics; whatever it accepts is in the one
//! canonical spelling (`encode` gives back exactly the input); refusals are one of two fixed
//! messages; an accepted token never opens under a key that did not seal it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::crypto::aead::{AeadKey, Algorithm};
use veil::crypto::secret::SecretKey;
use veil::crypto::token::{self, TokenError};
use veil::ids::TenantId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match token::parse(text) {
        Ok(t) => {
            assert_eq!(token::encode(&t.scheme, t.key_version, &t.sealed), text, "not canonical");
            assert!(t.sealed.len() >= token::MIN_SEALED_LEN);
            let tenant = TenantId::parse("acme").expect("tenant");
            for alg in Algorithm::ALL {
                let key = AeadKey::new(alg, &SecretKey::from_bytes([7u8; 32]));
                assert!(token::unprotect(&key, &tenant, &t, None, None).is_err(), "a forged token opened");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(matches!(e, TokenError::Malformed | TokenError::UnsupportedVersion), "{e:?}");
            if e == TokenError::UnsupportedVersion {
                assert!(text.starts_with("veil."), "{text:?}");
            }
            assert!(
                message == "the value is not a well-formed Veil token"
                    || message == "the token's format version is not supported"
            );
        }
    }
});
