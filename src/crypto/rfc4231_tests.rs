//! RFC 4231 HMAC-SHA-256, all seven test cases, as the RFC intends them. Cases 1–4 also run
//! through Veil's wrapper in `kdf` (their keys zero-padded to Veil's 32 bytes); here every case
//! runs through the `hmac` crate Veil uses with the RFC's own key, case 5's output truncated to
//! 128 bits, cases 6 and 7 with their 131-byte key (hashed first, being longer than the 64-byte
//! block). Veil's own [`kdf::hmac_sha256`] takes only 32-byte keys: of cases 5–7 it can run case 5
//! (20-byte key, zero-padded, truncated output compared), not 6 and 7.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::kdf;
use super::secret::SecretKey;
use super::testvec::{self, hex};

fn hmac_crate(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|e| panic!("{e}"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[test]
fn rfc4231_cases_1_to_4_with_the_rfc_keys() {
    let cases = testvec::parse(include_str!("../../tests/vectors/hmac-sha256-rfc4231.txt"));
    assert_eq!(cases.len(), 4);
    for c in &cases {
        assert_eq!(hex(&hmac_crate(&c.hex("key"), &c.hex("data"))), c.get("mac"), "{}", c.name());
    }
}

#[test]
fn rfc4231_cases_5_to_7_truncation_and_long_keys() {
    let cases = testvec::parse(include_str!("../../tests/vectors/hmac-sha256-rfc4231-cases-5-7.txt"));
    let names: Vec<&str> = cases.iter().map(|c| c.name().split(" (").next().unwrap_or("")).collect();
    assert_eq!(names, ["RFC 4231 4.6 test case 5", "RFC 4231 4.7 test case 6", "RFC 4231 4.8 test case 7"]);
    let mut through_veil = Vec::new();
    for c in &cases {
        let (key, data, n) = (c.hex("key"), c.hex("data"), c.name());
        let bits: usize = c.get("mac_bits").parse().unwrap_or(0);
        let want = c.get("mac");
        assert_eq!(want.len() * 4, bits, "{n}: mac is mac_bits long");
        let full = hmac_crate(&key, &data);
        assert_eq!(hex(&full[..bits / 8]), want, "{n}: hmac crate");
        // The crate's constant-time check of a truncated tag agrees, and rejects a changed one.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|e| panic!("{e}"));
        mac.update(&data);
        let mut tag = c.hex("mac");
        assert!(mac.clone().verify_truncated_left(&tag).is_ok(), "{n}");
        tag[0] ^= 1;
        assert!(mac.verify_truncated_left(&tag).is_err(), "{n}");
        if key.len() <= SecretKey::LEN {
            let mut padded = [0u8; 32];
            padded[..key.len()].copy_from_slice(&key);
            let veil = kdf::hmac_sha256(&SecretKey::from_bytes(padded), &data);
            assert_eq!(hex(&veil[..bits / 8]), want, "{n}: kdf::hmac_sha256");
            through_veil.push(n.to_string());
        } else {
            assert_eq!(key.len(), 131, "{n}");
        }
    }
    assert_eq!(through_veil.len(), 1, "case 5 only: {through_veil:?}");
}
