//! Schemes: named protection recipes (algorithm, KEK, policy, mask rule), as stored and as shown.

pub mod mask;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::aead::Algorithm;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use mask::MaskRule;

/// Which roles may do what with a scheme. An omitted list allows nobody (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub protect: Vec<String>,
    #[serde(default)]
    pub unprotect: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
    /// May re-encrypt tokens under the current version (`/v1/rewrap`), getting tokens back,
    /// never plaintext. Shown only when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrap: Vec<String>,
}

impl Policy {
    /// Role names: 1–64 printable ASCII characters without spaces; at most 64 per list.
    pub fn validate(&self) -> Result<(), String> {
        for (field, roles) in [
            ("protect", &self.protect),
            ("unprotect", &self.unprotect),
            ("mask", &self.mask),
            ("admin", &self.admin),
            ("rewrap", &self.rewrap),
        ] {
            if roles.len() > 64 {
                return Err(format!("policy.{field} lists more than 64 roles"));
            }
            if !roles.iter().all(|r| valid_role(r)) {
                return Err(format!(
                    "policy.{field}: a role is 1-64 printable ASCII characters without spaces"
                ));
            }
        }
        Ok(())
    }
}

fn valid_role(r: &str) -> bool {
    !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_graphic())
}

/// Where a scheme's key-encryption key lives (DESIGN §12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KekRef {
    /// The dev-only local KEK from the `local_kek` variable.
    Local,
    /// An AWS KMS key (ARN, key id or alias).
    AwsKms { key_id: String },
    /// An Azure Key Vault key URL, `https://<vault>.vault.azure.net/keys/<name>[/<version>]`.
    AzureKeyvault { key_url: String },
}

/// Longest AWS KMS `key_id` and Azure `key_url` accepted.
pub const MAX_KEY_ID_LEN: usize = 2048;
pub const MAX_KEY_URL_LEN: usize = 512;

/// The Key Vault and Managed HSM host suffixes a `key_url` may name (public and sovereign clouds).
pub const VAULT_HOST_SUFFIXES: &[&str] = &[
    ".vault.azure.net",
    ".managedhsm.azure.net",
    ".vault.azure.cn",
    ".managedhsm.azure.cn",
    ".vault.usgovcloudapi.net",
    ".managedhsm.usgovcloudapi.net",
    ".vault.microsoftazure.de",
];

impl KekRef {
    /// Checks the shape of a caller's KEK reference before any vault is contacted, exactly as the
    /// OpenAPI document's patterns state it (`KekAwsKms.key_id`, `KekAzureKeyvault.key_url`): a
    /// malformed reference is the caller's mistake (422 `invalid_field`), never `misconfigured`,
    /// which is for the deployment's own variables. The message never echoes the value.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            KekRef::Local => Ok(()),
            KekRef::AwsKms { key_id } => {
                let ok = (1..=MAX_KEY_ID_LEN).contains(&key_id.len())
                    && key_id.bytes().all(|b| b.is_ascii_graphic());
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "kek.key_id: a key ARN, key id or alias of 1-{MAX_KEY_ID_LEN} printable ASCII \
                         characters without spaces"
                    ))
                }
            }
            KekRef::AzureKeyvault { key_url } => {
                if key_url.len() <= MAX_KEY_URL_LEN && valid_key_url(key_url) {
                    Ok(())
                } else {
                    Err("kek.key_url: must be https://<vault>.vault.azure.net/keys/<name>[/<version>] \
                         (or a Managed HSM or sovereign-cloud vault host, or a loopback emulator)"
                        .into())
                }
            }
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            KekRef::Local => "local",
            KekRef::AwsKms { .. } => "aws-kms",
            KekRef::AzureKeyvault { .. } => "azure-keyvault",
        }
    }
}

/// `^(https://VAULT|https?://LOCAL)(:PORT)?/keys/NAME(/VERSION)?$` (the document's pattern):
/// VAULT is one or more `[A-Za-z0-9-]` labels before a known vault suffix; LOCAL is `localhost`,
/// `127.a.b.c`, `169.254.a.b` or `[::1]` (decimal octets without leading zeros); PORT is 0-65535
/// without leading zeros; NAME is 1-127 and VERSION 1-64 of `[A-Za-z0-9-]`.
fn valid_key_url(url: &str) -> bool {
    let (rest, https) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (r, true),
        (None, Some(r)) => (r, false),
        _ => return false,
    };
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let (authority, path) = rest.split_at(slash);
    let (host, port) = match authority.strip_prefix("[::1]") {
        Some(after) => ("[::1]", after),
        None => match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        },
    };
    if !port.is_empty() && !port.strip_prefix(':').is_some_and(|p| decimal_at_most(p, 5, 65_535)) {
        return false;
    }
    let host_ok = is_local_literal(host) || (https && is_vault_host(host));
    let Some(segments) = path.strip_prefix("/keys/") else {
        return false;
    };
    let mut parts = segments.split('/');
    let name_ok = parts.next().is_some_and(|n| key_segment(n, 127));
    let version_ok = parts.next().is_none_or(|v| key_segment(v, 64));
    host_ok && name_ok && version_ok && parts.next().is_none()
}

fn key_segment(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A decimal number of at most `digits` digits, without leading zeros, at most `max`.
fn decimal_at_most(s: &str, digits: usize, max: u32) -> bool {
    (1..=digits).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u32>().is_ok_and(|n| n <= max)
}

fn is_local_literal(host: &str) -> bool {
    let octets = |rest: &str, n: usize| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == n && parts.iter().all(|o| decimal_at_most(o, 3, 255))
    };
    host == "localhost"
        || host == "[::1]"
        || host.strip_prefix("127.").is_some_and(|r| octets(r, 3))
        || host.strip_prefix("169.254.").is_some_and(|r| octets(r, 2))
}

fn is_vault_host(host: &str) -> bool {
    VAULT_HOST_SUFFIXES.iter().any(|sfx| {
        host.strip_suffix(sfx).is_some_and(|labels| {
            !labels.is_empty()
                && labels
                    .split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        })
    })
}

/// A scheme as stored in the metadata database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    pub tenant: TenantId,
    pub name: SchemeName,
    pub algorithm: Algorithm,
    pub kek: KekRef,
    pub policy: Policy,
    pub mask: MaskRule,
    pub current_version: KeyVersion,
    /// Tokens of versions below this one are refused (`key_version_retired`); 1 ≤ it ≤ current.
    pub min_decryption_version: KeyVersion,
    /// When set, the first protect that finds the current version older than this rotates first.
    pub rotation_period: Option<RotationPeriod>,
    /// A caller with a `mask` role but no `unprotect` role gets each value masked by the
    /// scheme's rule (flagged `masked`) from unprotect, instead of `403 forbidden`.
    pub mask_on_deny: bool,
    /// Every Transit encrypt, decrypt, rewrap and datakey call must carry a `context` (a key
    /// created through Transit with `derived: true`; docs/transit.md "Context").
    pub context_required: bool,
    pub created_at: i64,
    /// When the scheme was erased (every key version destroyed; docs/erasure.md), if it was.
    pub erased_at: Option<i64>,
    /// Which data operations on this scheme are audited (administration always is).
    pub audit: AuditMode,
}

/// A scheme's `audit` setting (docs/audit.md): which of its data operations (protect, unprotect,
/// rewrap, mask) append an audit entry. Administrative operations are always audited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// Every data operation.
    #[default]
    All,
    /// Only refused and failed ones.
    Denied,
    /// None.
    None,
}

impl AuditMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::All => "all",
            AuditMode::Denied => "denied",
            AuditMode::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(AuditMode::All),
            "denied" => Some(AuditMode::Denied),
            "none" => Some(AuditMode::None),
            _ => None,
        }
    }
}

/// How long a data-key version stays current before a protect rotates the scheme: written
/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, from one second to [`RotationPeriod::MAX_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPeriod(u64);

impl RotationPeriod {
    /// The longest period accepted: 3650 days.
    pub const MAX_SECS: u64 = 3650 * 86_400;

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const RULE: &str =
            "rotation_period is a whole number (no leading zero) followed by s, m, h or d (e.g. \"30d\"), \
                            from 1s to 3650d";
        if !s.is_ascii() || s.len() < 2 {
            return Err(RULE);
        }
        let (digits, unit) = s.split_at(s.len() - 1);
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(RULE),
        };
        if digits.is_empty()
            || digits.len() > 10
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(RULE);
        }
        let n: u64 = digits.parse().map_err(|_| RULE)?;
        Self::from_secs(n.saturating_mul(unit)).ok_or(RULE)
    }

    pub fn from_secs(secs: u64) -> Option<Self> {
        (1..=Self::MAX_SECS).contains(&secs).then_some(Self(secs))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    /// True when a version created at `created_at` is due for rotation at `now` (Unix seconds).
    pub fn is_due(self, created_at: i64, now: i64) -> bool {
        now.saturating_sub(created_at) >= i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// Shown in the largest unit that divides it exactly: `86400` seconds is `"1d"`.
impl fmt::Display for RotationPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if self.0.is_multiple_of(secs) {
                return write!(f, "{}{unit}", self.0 / secs);
            }
        }
        write!(f, "{}s", self.0)
    }
}

/// The operations a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Protect,
    Unprotect,
    Mask,
    Admin,
    Rewrap,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Protect => "protect",
            Operation::Unprotect => "unprotect",
            Operation::Mask => "mask",
            Operation::Admin => "admin",
            Operation::Rewrap => "rewrap",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(url: &str) -> Result<(), String> {
        KekRef::AzureKeyvault { key_url: url.into() }.validate()
    }

    /// The same cases as the document's pattern (checked against it by tests/integration/test_openapi.py).
    #[test]
    fn key_urls_follow_the_documented_grammar() {
        for good in [
            "https://contoso.vault.azure.net/keys/veil-kek",
            "https://contoso.vault.azure.net/keys/veil-kek/0123456789abcdef0123456789abcdef",
            "https://a.b.managedhsm.azure.cn:443/keys/k/v1",
            "https://x.vault.usgovcloudapi.net/keys/K-1",
            "https://x.vault.microsoftazure.de/keys/k",
            "http://127.0.0.1:8080/keys/veil-kek",
            "http://169.254.169.254/keys/k",
            "https://localhost:65535/keys/k",
            "http://[::1]:0/keys/k",
        ] {
            assert_eq!(azure(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "contoso.vault.azure.net/keys/k",
            "https://vault.azure.net/keys/k",
            "http://contoso.vault.azure.net/keys/k",
            "https://contoso.vault.azure.net/keys/",
            "https://contoso.vault.azure.net/keys/k/",
            "https://contoso.vault.azure.net/keys/k/v/x",
            "https://contoso.vault.azure.net/secrets/k",
            "https://contoso.vault.azure.net:65536/keys/k",
            "https://contoso.vault.azure.net:080/keys/k",
            "https://contoso.vault.azure.net/keys/k?api-version=1",
            "https://contoso.vault.azure.net/keys/k#f",
            "https://user@contoso.vault.azure.net/keys/k",
            "https://contoso..vault.azure.net/keys/k",
            "https://contoso.vault.azure.net.evil.com/keys/k",
            "https://127.0.0.256/keys/k",
            "https://127.0.0.01/keys/k",
            "http://10.0.0.1/keys/k",
            "https://contoso.vault.azure.net/keys/k_1",
            " https://contoso.vault.azure.net/keys/k",
            "https://contoso.vault.azure.net/keys/k\n",
            "https://Contoso.VAULT.azure.net/keys/k",
        ] {
            let e = azure(bad).expect_err(bad);
            assert!(e.starts_with("kek.key_url: "), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "the message echoes the value");
        }
        let long = format!("https://contoso.vault.azure.net/keys/{}", "k".repeat(127));
        assert_eq!(azure(&long), Ok(()));
        let too_long = format!("https://{}.vault.azure.net/keys/k", "a.".repeat(250));
        assert!(too_long.len() > MAX_KEY_URL_LEN && azure(&too_long).is_err());
    }

    #[test]
    fn aws_key_ids_are_printable_ascii_without_spaces() {
        let aws = |id: &str| KekRef::AwsKms { key_id: id.into() }.validate();
        assert_eq!(
            aws("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
            Ok(())
        );
        assert_eq!(aws("alias/veil"), Ok(()));
        assert_eq!(aws(&"k".repeat(MAX_KEY_ID_LEN)), Ok(()));
        for bad in
            ["", " alias/veil", "alias/ veil", "alias/veil\n", "clé", "k".repeat(MAX_KEY_ID_LEN + 1).as_str()]
        {
            assert!(aws(bad).expect_err(bad).starts_with("kek.key_id: "));
        }
        assert_eq!(KekRef::Local.validate(), Ok(()));
    }

    #[test]
    fn rotation_periods_parse_and_show_canonically() {
        for (text, secs, shown) in [
            ("1s", 1, "1s"),
            ("90s", 90, "90s"),
            ("120s", 120, "2m"),
            ("30d", 2_592_000, "30d"),
            ("24h", 86_400, "1d"),
            ("3650d", 315_360_000, "3650d"),
            ("87600h", 315_360_000, "3650d"),
            ("5256000m", 315_360_000, "3650d"),
            ("315360000s", 315_360_000, "3650d"),
        ] {
            let p = RotationPeriod::parse(text).expect(text);
            assert_eq!((p.secs(), p.to_string().as_str()), (secs, shown), "{text}");
        }
        for bad in [
            "",
            "d",
            "0s",
            "0d",
            "3651d",
            "-1d",
            "1w",
            "1 d",
            "1.5d",
            "+1d",
            "99999999999s",
            "1D",
            "1é",
            "é",
            "d1",
            "01d",
            "00s",
            "87601h",
            "5256001m",
            "315360001s",
        ] {
            assert!(RotationPeriod::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RotationPeriod::from_secs(0), None);
        assert_eq!(RotationPeriod::from_secs(RotationPeriod::MAX_SECS + 1), None);
    }

    #[test]
    fn due_exactly_at_the_period() {
        let p = RotationPeriod::parse("1m").expect("1m");
        assert!(!p.is_due(1000, 1059));
        assert!(p.is_due(1000, 1060));
        assert!(!p.is_due(1000, 900)); // a clock behind the creation time never rotates
    }
}
