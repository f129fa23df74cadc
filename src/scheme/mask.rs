//! Masking rules as data (DESIGN §5, §7): a scheme stores one rule as JSON, e.g.
//! `{"rule": "keep_last", "n": 4, "char": "*"}`, and the mask endpoint applies it.
//!
//! Characters are counted as Unicode scalar values, so a mask never splits UTF-8.
//! Decisions (documented here and in the API docs):
//! - `keep_first` / `keep_last`: when `n` is at least the value's length, the value is
//!   returned unchanged (nothing to hide beyond what the rule already reveals).
//! - `email`: `local@domain` with exactly one `@` and both parts non-empty becomes the
//!   local part's first character, `char` for each of its other characters, then
//!   `@domain` unchanged; a one-character local part is masked entirely. Anything else is
//!   not an e-mail address and is masked like `redact`.
//! - `redact` and `fixed` hide the length; `nullify` gives JSON `null`; `hmac` is the
//!   lowercase hex HMAC-SHA256 of the value's UTF-8 bytes under the scheme's mask key.

use std::fmt;

use crate::crypto::kdf::hmac_sha256;
use crate::crypto::secret::SecretKey;

/// The text that replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";
/// The largest `n` or `length` a rule may carry.
pub const MAX_RULE_LEN: u32 = 4096;

fn star() -> char {
    '*'
}

/// One masking rule, as stored in a scheme.
///
/// Deserialised through `MaskRuleWire`, because serde ignores unknown fields beside the
/// tag of a unit variant (`{"rule":"redact","n":1}` would pass); the wire type gives every
/// variant a body so that `deny_unknown_fields` holds for all of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields, from = "MaskRuleWire")]
pub enum MaskRule {
    /// The fixed text `[REDACTED]`, whatever the input (hides the length).
    Redact,
    /// Keeps the first `n` characters and replaces each other one with `char`.
    KeepFirst {
        n: u32,
        #[serde(default = "star")]
        char: char,
    },
    /// Keeps the last `n` characters and replaces each other one with `char`.
    KeepLast {
        n: u32,
        #[serde(default = "star")]
        char: char,
    },
    /// `jane.doe@example.com` → `j*******@example.com`; a non-address is redacted.
    Email {
        #[serde(default = "star")]
        char: char,
    },
    /// `length` copies of `char`, whatever the input.
    Fixed {
        length: u32,
        #[serde(default = "star")]
        char: char,
    },
    /// JSON `null`.
    Nullify,
    /// Lowercase hex HMAC-SHA256 under the scheme's mask key (a keyed, joinable hash).
    Hmac,
}

/// The JSON shape of [`MaskRule`], strict about unknown fields for every rule.
#[derive(serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
enum MaskRuleWire {
    Redact {},
    KeepFirst {
        #[serde(deserialize_with = "whole_number")]
        n: u32,
        #[serde(default = "star")]
        char: char,
    },
    KeepLast {
        #[serde(deserialize_with = "whole_number")]
        n: u32,
        #[serde(default = "star")]
        char: char,
    },
    Email {
        #[serde(default = "star")]
        char: char,
    },
    Fixed {
        #[serde(deserialize_with = "whole_number")]
        length: u32,
        #[serde(default = "star")]
        char: char,
    },
    Nullify {},
    Hmac {},
}

/// A JSON number with no fractional part, as JSON Schema's `integer` reads it (`4` and `4.0`
/// alike: the OpenAPI document says `integer`, so a request with `4.0` is valid and accepted).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error as _;
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => Some(f as u64),
        _ => None,
    };
    whole
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| D::Error::custom("expected a whole number from 0 to 4294967295"))
}

impl From<MaskRuleWire> for MaskRule {
    fn from(w: MaskRuleWire) -> Self {
        match w {
            MaskRuleWire::Redact {} => MaskRule::Redact,
            MaskRuleWire::KeepFirst { n, char } => MaskRule::KeepFirst { n, char },
            MaskRuleWire::KeepLast { n, char } => MaskRule::KeepLast { n, char },
            MaskRuleWire::Email { char } => MaskRule::Email { char },
            MaskRuleWire::Fixed { length, char } => MaskRule::Fixed { length, char },
            MaskRuleWire::Nullify {} => MaskRule::Nullify,
            MaskRuleWire::Hmac {} => MaskRule::Hmac,
        }
    }
}

/// Why a rule could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskError {
    /// The `hmac` rule was applied without the scheme's mask key.
    MissingKey,
    /// The rule fails [`MaskRule::validate`].
    InvalidRule,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskError::MissingKey => "the hmac mask rule needs the scheme's mask key",
            MaskError::InvalidRule => "the mask rule is invalid",
        })
    }
}

impl std::error::Error for MaskError {}

fn check_char(c: char) -> Result<(), String> {
    if c.is_control() {
        Err("mask rule field `char` must not be a control character".into())
    } else {
        Ok(())
    }
}

fn check_n(n: u32) -> Result<(), String> {
    if n > MAX_RULE_LEN {
        Err(format!("mask rule field `n` must be at most {MAX_RULE_LEN}"))
    } else {
        Ok(())
    }
}

fn repeat(c: char, count: usize) -> String {
    std::iter::repeat_n(c, count).collect()
}

impl MaskRule {
    /// Checks the rule's parameters: `n` ≤ 4096, 1 ≤ `length` ≤ 4096, `char` not a control
    /// character. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            MaskRule::Redact | MaskRule::Nullify | MaskRule::Hmac => Ok(()),
            MaskRule::KeepFirst { n, char } | MaskRule::KeepLast { n, char } => {
                check_n(n)?;
                check_char(char)
            }
            MaskRule::Email { char } => check_char(char),
            MaskRule::Fixed { length, char } => {
                if !(1..=MAX_RULE_LEN).contains(&length) {
                    return Err(format!("mask rule field `length` must be from 1 to {MAX_RULE_LEN}"));
                }
                check_char(char)
            }
        }
    }

    /// True only for `hmac`, the one rule that needs a key.
    pub fn needs_key(&self) -> bool {
        matches!(self, MaskRule::Hmac)
    }

    /// Masks one value. `Ok(None)` means JSON `null`. An invalid rule is refused rather than
    /// allowed to allocate without bound.
    pub fn apply(&self, value: &str, mask_key: Option<&SecretKey>) -> Result<Option<String>, MaskError> {
        self.validate().map_err(|_| MaskError::InvalidRule)?;
        Ok(Some(match *self {
            MaskRule::Redact => REDACTED.to_owned(),
            MaskRule::Nullify => return Ok(None),
            MaskRule::Fixed { length, char } => repeat(char, length as usize),
            MaskRule::KeepFirst { n, char } => {
                let len = value.chars().count();
                let n = n as usize;
                if n >= len {
                    value.to_owned()
                } else {
                    let mut out: String = value.chars().take(n).collect();
                    out.extend(std::iter::repeat_n(char, len - n));
                    out
                }
            }
            MaskRule::KeepLast { n, char } => {
                let len = value.chars().count();
                let n = n as usize;
                if n >= len {
                    value.to_owned()
                } else {
                    let mut out = repeat(char, len - n);
                    out.extend(value.chars().skip(len - n));
                    out
                }
            }
            MaskRule::Email { char } => mask_email(value, char),
            MaskRule::Hmac => {
                let key = mask_key.ok_or(MaskError::MissingKey)?;
                let mac = hmac_sha256(key, value.as_bytes());
                let mut hex = String::with_capacity(64);
                for b in mac {
                    hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                    hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
                }
                hex
            }
        }))
    }
}

fn mask_email(value: &str, c: char) -> String {
    let mut parts = value.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return REDACTED.to_owned();
    };
    if local.is_empty() || domain.is_empty() {
        return REDACTED.to_owned();
    }
    let len = local.chars().count();
    let mut out = String::with_capacity(value.len() + len * 3);
    if len >= 2 {
        out.extend(local.chars().take(1));
        out.extend(std::iter::repeat_n(c, len - 1));
    } else {
        out.push(c);
    }
    out.push('@');
    out.push_str(domain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> MaskRule {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }
    fn ap(r: &MaskRule, v: &str) -> Option<String> {
        r.apply(v, None).unwrap_or_else(|e| panic!("{r:?} on {v:?}: {e}"))
    }
    fn s(x: &str) -> Option<String> {
        Some(x.to_owned())
    }

    #[test]
    fn keep_last_round_trip_and_example() {
        let json = r#"{"rule":"keep_last","n":4,"char":"*"}"#;
        let r = rule(json);
        assert_eq!(r, MaskRule::KeepLast { n: 4, char: '*' });
        assert_eq!(serde_json::to_string(&r).ok().as_deref(), Some(json));
        assert_eq!(ap(&r, "4111111111111111"), s("************1111"));
        assert_eq!(rule(r#"{"rule":"keep_last","n":4}"#), r, "char defaults to *");
    }

    #[test]
    fn serde_round_trips_every_rule() {
        for r in [
            MaskRule::Redact,
            MaskRule::KeepFirst { n: 2, char: '#' },
            MaskRule::KeepLast { n: 0, char: '•' },
            MaskRule::Email { char: '*' },
            MaskRule::Fixed { length: 8, char: 'x' },
            MaskRule::Nullify,
            MaskRule::Hmac,
        ] {
            let j = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(serde_json::from_str::<MaskRule>(&j).ok(), Some(r.clone()), "{j}");
        }
        assert_eq!(serde_json::to_string(&MaskRule::Redact).ok().as_deref(), Some(r#"{"rule":"redact"}"#));
    }

    #[test]
    fn unknown_rules_and_fields_rejected() {
        for bad in [
            r#"{"rule":"date"}"#,
            r#"{"rule":"KeepLast","n":4}"#,
            r#"{"rule":"keep_last","n":4,"chr":"*"}"#,
            r#"{"rule":"keep_last"}"#,
            r#"{"rule":"keep_last","n":-1}"#,
            r#"{"rule":"keep_last","n":4,"char":"**"}"#,
            r#"{"rule":"keep_last","n":4,"char":""}"#,
            r#"{"rule":"fixed","length":4,"n":1}"#,
            r#"{"rule":"email","n":1}"#,
            r#"{"rule":"redact","n":1}"#,
            r#"{"rule":"nullify","char":"*"}"#,
            r#"{"rule":"hmac","key":"00"}"#,
            r#"{"n":4}"#,
            r#""redact""#,
        ] {
            assert!(serde_json::from_str::<MaskRule>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let rule = |j: &str| serde_json::from_str::<MaskRule>(j).map_err(|e| e.to_string());
        assert_eq!(rule(r#"{"rule":"keep_last","n":4.0}"#), Ok(MaskRule::KeepLast { n: 4, char: '*' }));
        assert_eq!(rule(r#"{"rule":"fixed","length":1e1}"#), Ok(MaskRule::Fixed { length: 10, char: '*' }));
        assert_eq!(rule(r#"{"rule":"keep_first","n":-0.0}"#), Ok(MaskRule::KeepFirst { n: 0, char: '*' }));
        for bad in [
            r#"{"rule":"keep_last","n":4.5}"#,
            r#"{"rule":"keep_last","n":-1}"#,
            r#"{"rule":"keep_last","n":"4"}"#,
            r#"{"rule":"fixed","length":4294967296}"#,
            r#"{"rule":"keep_last","n":null}"#,
        ] {
            let e = rule(bad).expect_err(bad);
            assert!(!e.contains("4.5") && !e.contains("4294967296"), "{e}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let msg = |r: MaskRule| r.validate().err().unwrap_or_default();
        assert!(msg(MaskRule::KeepFirst { n: 4097, char: '*' }).contains("`n`"));
        assert!(msg(MaskRule::KeepLast { n: 1, char: '\n' }).contains("`char`"));
        assert!(msg(MaskRule::Email { char: '\u{7f}' }).contains("`char`"));
        assert!(msg(MaskRule::Fixed { length: 0, char: '*' }).contains("`length`"));
        assert!(msg(MaskRule::Fixed { length: 4097, char: '*' }).contains("`length`"));
        assert!(MaskRule::Fixed { length: 4096, char: '*' }.validate().is_ok());
        assert!(MaskRule::KeepFirst { n: 4096, char: '█' }.validate().is_ok());
        assert_eq!(MaskRule::Fixed { length: 0, char: '*' }.apply("x", None), Err(MaskError::InvalidRule));
    }

    #[test]
    fn redact_fixed_nullify() {
        assert_eq!(ap(&MaskRule::Redact, ""), s(REDACTED));
        assert_eq!(ap(&MaskRule::Redact, "a very long secret"), s("[REDACTED]"));
        let f = MaskRule::Fixed { length: 6, char: '•' };
        assert_eq!(ap(&f, ""), s("••••••"));
        assert_eq!(ap(&f, "Zoë"), s("••••••"));
        assert_eq!(ap(&MaskRule::Nullify, "x"), None);
    }

    #[test]
    fn keep_first_and_last_count_scalar_values() {
        let kf = MaskRule::KeepFirst { n: 2, char: '*' };
        assert_eq!(ap(&kf, "Zoë Ångström"), s("Zo**********"));
        assert_eq!(ap(&kf, "東京都"), s("東京*"));
        assert_eq!(ap(&kf, "🙂🙃x"), s("🙂🙃*"));
        assert_eq!(ap(&kf, "ab"), s("ab"), "n = length: unchanged");
        assert_eq!(ap(&kf, "a"), s("a"), "n > length: unchanged");
        assert_eq!(ap(&kf, ""), s(""));
        let kl = MaskRule::KeepLast { n: 3, char: '#' };
        assert_eq!(ap(&kl, "Ångström"), s("#####röm"));
        assert_eq!(ap(&kl, "x東京🙂"), s("#東京🙂"));
        assert_eq!(ap(&kl, "abc"), s("abc"));
        assert_eq!(ap(&MaskRule::KeepLast { n: 0, char: '*' }, "abc"), s("***"));
        assert_eq!(ap(&MaskRule::KeepFirst { n: 0, char: '*' }, "é"), s("*"));
        assert_eq!(ap(&MaskRule::KeepLast { n: 4096, char: '*' }, "1234"), s("1234"));
    }

    #[test]
    fn email() {
        let e = MaskRule::Email { char: '*' };
        assert_eq!(ap(&e, "jane.doe@example.com"), s("j*******@example.com"));
        assert_eq!(ap(&e, "zoë@exämple.de"), s("z**@exämple.de"));
        assert_eq!(ap(&e, "j@x.io"), s("*@x.io"), "a one-character local part is hidden too");
        for not_email in ["", "@", "jane", "@example.com", "jane@", "a@b@c", "jane.doe.example.com"] {
            assert_eq!(ap(&e, not_email), s(REDACTED), "{not_email:?}");
        }
    }

    #[test]
    fn hmac_rule() {
        assert!(MaskRule::Hmac.needs_key());
        assert!(!MaskRule::Redact.needs_key() && !MaskRule::Fixed { length: 1, char: '*' }.needs_key());
        assert_eq!(MaskRule::Hmac.apply("x", None), Err(MaskError::MissingKey));
        // RFC 4231 test case 2 (key "Jefe", zero-padded: HMAC pads short keys with zeros).
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        let key = SecretKey::from_bytes(k);
        assert_eq!(
            MaskRule::Hmac.apply("what do ya want for nothing?", Some(&key)),
            Ok(s("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
        );
        // Golden: the mask of a value under a fixed key must never change.
        let key = SecretKey::from_bytes(*b"0123456789abcdef0123456789abcdef");
        assert_eq!(MaskRule::Hmac.apply("4111111111111111", Some(&key)), Ok(s(HMAC_GOLDEN)));
        // Other rules ignore a key.
        assert_eq!(MaskRule::Redact.apply("x", Some(&key)), Ok(s(REDACTED)));
    }

    const HMAC_GOLDEN: &str = "7b7e6cb2715c7b1c37110f035123abd3fe93c04fa302da2946c4bd9342d2fd2c";
}
